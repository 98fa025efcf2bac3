FROM python:3.11-slim
WORKDIR /srv/monoscope
COPY pyproject.toml README.md ./
COPY app ./app
COPY templates ./templates
COPY static ./static
RUN pip install --no-cache-dir torch==2.13.0 && pip install --no-cache-dir .
ENV MONOSCOPE_HOST=0.0.0.0 MONOSCOPE_DATA_DIR=/data
EXPOSE 8000
CMD ["monoscope", "serve"]
