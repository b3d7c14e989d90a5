FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY support_bot ./support_bot
COPY conversations ./conversations
COPY knowledge ./knowledge
COPY bot ./bot
COPY inbox ./inbox
COPY studio ./studio
RUN pip install .

COPY . .
# collectstatic needs settings, not secrets: a throwaway key for this one build step. The
# question embedder's int8 graph is built here too, so no container builds it at its first reply.
RUN SECRET_KEY=build-only REDIS_URL=redis://unused:6379/0 DATABASE_URL=sqlite:////tmp/build.db \
    sh -c 'python manage.py collectstatic --noinput \
      && python manage.py shell -c "from knowledge.search.embeddings import get_embedder; get_embedder()"' \
 && useradd --create-home --uid 10001 supportbot \
 && mkdir -p /app/var/media && chown -R supportbot /app/var
USER supportbot

EXPOSE 8000
CMD ["uvicorn", "support_bot.asgi:application", "--host", "0.0.0.0", "--port", "8000", \
     "--workers", "2", "--proxy-headers", "--forwarded-allow-ips", "*", "--no-access-log", \
     "--ws-max-size", "65536", "--ws-per-message-deflate", "false"]
