# syntax=docker/dockerfile:1
# Gatehouse image:  docker build -t registry.example.com/gatehouse:0.1.0 .
# The final stage holds Node, the compiled gateway and its runtime dependencies: no compilers, no
# dev dependencies, no TypeScript sources. Mount llama_config_edits.yaml at /etc/gatehouse/ and a
# volume at /var/lib/gatehouse (README: Docker).

# python3, make and g++ build better-sqlite3's native addon when no prebuilt binary is downloaded.
FROM node:24-bookworm-slim AS toolchain
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./

# Every dependency, to compile src/ into dist/.
FROM toolchain AS build
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# Runtime dependencies only, compiled here so the compilers stay behind in this stage.
FROM toolchain AS deps
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM node:24-bookworm-slim
ENV NODE_ENV=production \
    GATEHOUSE_CONFIG=/etc/gatehouse/llama_config_edits.yaml
WORKDIR /app
# Owned by root: the gateway process can read its code but never change it.
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY config ./config
# The only directory Gatehouse writes to, and its working directory: the defaults' relative paths
# (database.url sqlite:./gatehouse.db, gateway.data_dir ./.gatehouse) land in it, so the database and
# generated secrets are kept by one volume mounted at /var/lib/gatehouse. /app stays read-only.
RUN mkdir -p /etc/gatehouse /var/lib/gatehouse \
  && chown node:node /var/lib/gatehouse \
  && chmod 700 /var/lib/gatehouse
USER node
WORKDIR /var/lib/gatehouse
EXPOSE 5001
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:5001/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "--max-semi-space-size=8", "/app/dist/cli.js"]
CMD ["serve"]
