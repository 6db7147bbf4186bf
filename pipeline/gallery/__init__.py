"""The gallery page's files (HTML, one script, one stylesheet), served by ``api.py``."""
