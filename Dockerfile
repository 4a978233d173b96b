# vae-anomaly HTTP service: build, run and measurements are in docs/CONTAINER.md.
#   docker build -t vae-anomaly .                                          # CPU torch (VARIANT=cpu)
#   docker build -t vae-anomaly:cuda --build-arg VARIANT=cuda .            # CUDA torch from PyPI (CUDA 13.0)
#   docker build -t vae-anomaly:demo --build-arg MODEL_DIR=models/demo .    # model baked into /model
#   docker build -t vae-anomaly:full --build-arg INSTALL=full .             # also the training CLI's deps
#   docker run -p 8000:8000 -v "$PWD/models/demo:/model:ro" vae-anomaly

# ---------------------------------------------------------------- stage 1: optional baked-in model
# Always runs, so the default build needs no placeholder directory and no COPY of a path that may be
# missing. With MODEL_DIR empty (the default) /stage stays empty; otherwise MODEL_DIR (relative to
# the build context, under models/ -- see .dockerignore) must hold a trained model (manifest.json).
# Files are made world-readable here: a model saved with a 0700 directory and 0600 weights (what
# save_artifact wrote before it fixed the modes, or any umask 077) is unreadable to the non-root user.
FROM python:3.11-slim AS model
ARG MODEL_DIR=""
COPY . /ctx/
RUN set -eu; mkdir /stage; \
    if [ -n "$MODEL_DIR" ]; then \
      src="/ctx/${MODEL_DIR#./}"; \
      if [ ! -f "$src/manifest.json" ]; then \
        echo "MODEL_DIR=$MODEL_DIR: no manifest.json there in the build context (a trained model directory under models/ is expected)" >&2; \
        exit 1; \
      fi; \
      cp -R "$src/." /stage/; \
      chmod -R u=rwX,go=rX /stage; \
      ls -l /stage; \
    fi

# ---------------------------------------------------------------- stage 2: the service image
FROM python:3.11-slim

# Which torch: VARIANT=cpu (default) or cuda; TORCH_SPEC, when set, replaces the choice (pip words).
#   cpu:  torch==$TORCH_VERSION+cpu from PyTorch's CPU index. PyPI's plain torch for Linux x86_64 is the
#         CUDA build (~3 GB of nvidia-* wheels). pip also finds the +cpu wheel in a wheel folder it is
#         offered (find-links, as container-check -w does), so the build works offline.
#   cuda: torch==$TORCH_VERSION from PyPI: for 2.13.0 that is the CUDA 13.0 build (needs an NVIDIA driver
#         that supports CUDA 13). For another CUDA version, name PyTorch's index for it, e.g.
#         --build-arg VARIANT=cuda --build-arg TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
# A cuda build stops if the installed torch has no CUDA support (e.g. a +cpu wheel from a find-links folder).
ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_SPEC=""

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VAE_ANOMALY_MODEL_DIR=/model \
    VAE_ANOMALY_WORKERS=1

# torch first and on its own layer: the largest and slowest-changing part of the image.
RUN set -eu; \
    spec="$TORCH_SPEC"; \
    if [ -z "$spec" ]; then \
      case "$VARIANT" in \
        cpu) spec="torch==${TORCH_VERSION}+cpu --extra-index-url https://download.pytorch.org/whl/cpu" ;; \
        cuda) spec="torch==${TORCH_VERSION}" ;; \
        *) echo "VARIANT must be cpu or cuda, got '$VARIANT'" >&2; exit 1 ;; \
      esac; \
    fi; \
    echo "VARIANT=$VARIANT: pip install $spec"; \
    pip install --no-cache-dir $spec; \
    python -c "import sys, torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda); \
sys.exit('VARIANT=cuda but this torch has no CUDA support' if sys.argv[1] == 'cuda' and not torch.version.cuda else 0)" \
        "$VARIANT"

# The project. INSTALL=serve (default): the service's dependencies only, i.e. those of pyproject.toml
# minus TRAIN_ONLY (pandas, pyarrow, scikit-learn, matplotlib), then the project with --no-deps.
# `vae-anomaly serve` never imports them; train, score, evaluate and demo do, and fail in this image with
# "No module named 'pandas'". INSTALL=full: everything `pip install .` brings (and `pip check`).
# Declared here, not with the torch arguments, so that changing it keeps the torch layer cached.
ARG INSTALL=serve
# Only what the package build needs (pyproject.toml names README.md as readme; setuptools warns and
# goes on without it, so README edits do not invalidate this layer). torch>=2.2 is already satisfied,
# so this step leaves the torch chosen above alone. The build backend lives in pip's throwaway build
# environment; the source copy is removed in the same layer.
WORKDIR /tmp/src
COPY pyproject.toml ./
COPY model/ model/
COPY service/ service/
COPY training/ training/
COPY vae_anomaly/ vae_anomaly/
RUN set -eu; \
    case "$INSTALL" in \
      full) pip install --no-cache-dir . && pip check ;; \
      serve) python -c "import re, tomllib; \
TRAIN_ONLY = {'pandas', 'pyarrow', 'scikit-learn', 'matplotlib'}; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
print('\\n'.join(d for d in deps if re.split(r'[^A-Za-z0-9_.-]', d)[0].lower() not in TRAIN_ONLY))" \
               > /tmp/serve-requirements.txt; \
             cat /tmp/serve-requirements.txt; \
             pip install --no-cache-dir -r /tmp/serve-requirements.txt \
             && pip install --no-cache-dir --no-deps . \
             && cd / && python -c "import vae_anomaly.service.app, vae_anomaly.training.cli" && rm /tmp/serve-requirements.txt ;; \
      *) echo "INSTALL must be serve or full, got '$INSTALL'" >&2; exit 1 ;; \
    esac; \
    cd / && rm -rf /tmp/src

# Fixed numeric ids (10001:10001) so that orchestrators can check runAsNonRoot and mounted files can
# be granted to that uid; a home directory for libraries that want a writable config/cache dir.
RUN groupadd --gid 10001 vae \
    && useradd --uid 10001 --gid 10001 --no-log-init --create-home --home-dir /home/vae \
        --shell /usr/sbin/nologin vae

# Empty unless built with MODEL_DIR; a mounted volume (-v ...:/model:ro) takes its place.
COPY --from=model /stage/ /model/
VOLUME ["/model"]

USER 10001:10001
WORKDIR /home/vae
EXPOSE 8000

# /healthz answers only once the app has started, i.e. after the model is loaded and warmed up.
# python, not curl: the slim base has no curl. Port 8000 is assumed (keep it if you change the CMD).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# `serve` sets VAE_ANOMALY_MODEL_DIR from its argument; other settings come from VAE_ANOMALY_* env
# (VAE_ANOMALY_API_TOKEN, VAE_ANOMALY_DEVICE, VAE_ANOMALY_MAX_BATCH, ...). More workers:
#   docker run -e VAE_ANOMALY_WORKERS=2 ... vae-anomaly     (README "Operations": metrics, SIGHUP, SIGTERM)
# Exec form: serve is PID 1 and gets `docker stop`'s SIGTERM (graceful, exit 0) and `docker kill -s HUP` (reload).
CMD ["vae-anomaly", "serve", "/model", "--host", "0.0.0.0", "--port", "8000"]
