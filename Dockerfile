# The Monoscope server. htmx comes from the npm registry in a build stage, as package-lock.json pins it.
FROM node:22-slim AS assets
WORKDIR /assets
COPY package.json package-lock.json ./
RUN npm ci --omit=dev

FROM python:3.11-slim
WORKDIR /srv/monoscope
# torch from PyPI is the CUDA build on Linux: the same image runs on a CPU or, with the GPU
# override (docker-compose.gpu.yml), on an NVIDIA GPU.
RUN pip install --no-cache-dir torch==2.13.0
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY templates ./templates
COPY static ./static
COPY migrations ./migrations
COPY --from=assets /assets/node_modules ./node_modules
# Editable: templates, static files, migrations and the demo weights are read from this tree.
RUN pip install --no-cache-dir -e ".[ray]"
ENV MONOSCOPE_HOST=0.0.0.0 MONOSCOPE_DATA_DIR=/data
EXPOSE 8000
# `serve` and `demo` migrate the database before they listen.
CMD ["monoscope", "demo"]
