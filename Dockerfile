FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY workers ./workers
RUN pip install --no-cache-dir .
USER nobody
CMD ["bridge", "serve", "--host", "0.0.0.0"]
