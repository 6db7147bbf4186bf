"""Everything that talks to the outside: embedders, vector stores, the Foundry emulator."""

import os

# numpy's OpenBLAS worker threads spin-wait after every call; on a 2-core machine that
# burns a whole core while the daemon waits on the network. Our matrices are small.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
