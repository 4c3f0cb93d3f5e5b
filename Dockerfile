# apfa: one image for every role — `apfa serve` (the default CMD), `apfa worker`, `apfa migrate`, `apfa run`, …
# Build:  docker build -t apfa .
# Run:    docker compose up -d   (docker-compose.yml; see docs/operations.md, "Deployment")
#
# The embedded default of pipeline.yaml (embedded Postgres under .apfa/pg, fs store, Postgres notifier) is not
# what a container should run: DATABASE_URL must be set, and APFA_CONFIG should point at a pipeline file that
# uses shared services (deploy/pipeline.compose.yaml: S3/MinIO store, Redis notifier and cache). A container
# that writes to its own filesystem loses every index on restart and cannot share it with other replicas.

# Build stage: compiles the TypeScript to dist/ (`npm run build` needs the dev dependencies, typescript among
# them), so the image runs JavaScript and pays no TypeScript loader at start-up (bin/apfa.mjs runs dist/ when
# it is there; with no tsconfig.build.json beside it, dist/ is all it considers, as in an installed package).
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm run build

FROM node:20-bookworm-slim

ENV NODE_ENV=production \
    APFA_CONFIG=deploy/pipeline.compose.yaml
WORKDIR /app

# Dependencies first, so source edits do not re-run the install. The lockfile is authoritative (`npm ci`).
# Install scripts run only for the packages package.json's allowScripts vouches for and the image needs:
# esbuild (tsx) and usearch (picks its prebuilt binary); onnxruntime-node's CUDA download stays off.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm rebuild esbuild usearch \
 && npm cache clean --force

COPY bin ./bin
COPY runtime ./runtime
COPY server ./server
COPY plugins ./plugins
COPY migrations ./migrations
COPY examples ./examples
COPY deploy ./deploy
COPY pipeline.yaml pipeline.schema.json tsconfig.json ./
COPY --from=build /app/dist ./dist

# The sample corpus the compose pipeline embeds (deterministic: same 1,000 documents as `apfa main`).
RUN node --import tsx examples/corpus.ts examples/data/corpus.jsonl

# Non-root: the app files stay root-owned and read-only to the process; only the cache dir is writable.
RUN groupadd --system apfa && useradd --system --gid apfa --home-dir /app --shell /usr/sbin/nologin apfa \
 && mkdir -p /app/.apfa /app/deploy/.apfa \
 && chown -R apfa:apfa /app/.apfa /app/deploy/.apfa
USER apfa

EXPOSE 8080 9464

# /health answers on the server port. Workers have /health on their --metrics-port instead; docker-compose.yml
# overrides this check for them.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8080/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

ENTRYPOINT ["node", "bin/apfa.mjs"]
CMD ["serve"]
