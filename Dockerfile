# syntax=docker/dockerfile:1
# simmeter image. Stages:
#   deps-dev  -> dev      the full dev install and the build (tsx, the Stripe emulator, the tests);
#                         compose's `try` profile runs the emulator from it
#   deps-prod -> runtime  (the default target) production dependencies, dist/, bin/, drizzle/:
#                         no tsx, no esbuild, no compiler (TypeScript comes along only as an
#                         optional peer of a dependency and is never run: ADR 0008)
# Build:  docker build -t simmeter .        Run: see compose.yaml and docs/deployment.md
# This file is checked by test/integration/deploy-files.test.ts; no image was built where it was
# written (no container daemon there): docs/deployment.md says what was run and what only checked.

ARG NODE_VERSION=20
# npm 11 reads "allowScripts" from package.json; --strict-allow-scripts fails on an unreviewed one.
ARG NPM_VERSION=11.19.1

FROM node:${NODE_VERSION}-bookworm-slim AS base
ARG NPM_VERSION
RUN npm install -g --no-fund --no-audit "npm@${NPM_VERSION}" && npm cache clean --force
WORKDIR /app

# better-sqlite3 compiles from source when no prebuilt binary matches: python3, make and g++.
FROM base AS toolchain
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*

FROM toolchain AS deps-dev
COPY package.json package-lock.json ./
RUN npm ci --no-fund --no-audit --strict-allow-scripts

FROM deps-dev AS dev
COPY . .
RUN npm run build
# The Stripe emulator, for trying simmeter without a Stripe account (compose profile `try`).
CMD ["node_modules/.bin/tsx", "scripts/stripe-emulator.ts", "--accept-any-customer", "--auto-subscribe"]

FROM toolchain AS deps-prod
COPY package.json package-lock.json ./
RUN npm ci --no-fund --no-audit --omit=dev --strict-allow-scripts

FROM base AS runtime
# Only simmeter's own variables (src/config.ts) are set here, and checked to be so by the test.
# Inside a container both listeners must listen beyond loopback; the admin listener then needs
# ADMIN_TOKEN (set it at run time, never in the image). The ledger lives on the volume.
ENV HOST=0.0.0.0 \
    PORT=8080 \
    ADMIN_HOST=0.0.0.0 \
    ADMIN_PORT=8081 \
    DATABASE_PATH=/var/lib/simmeter/simmeter.db
COPY --from=deps-prod /app/node_modules ./node_modules
COPY --from=dev /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY drizzle ./drizzle
RUN mkdir -p /var/lib/simmeter && chown node:node /var/lib/simmeter
USER node
VOLUME ["/var/lib/simmeter"]
EXPOSE 8080 8081
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.ADMIN_PORT}/healthz`, { headers: process.env.ADMIN_TOKEN ? { authorization: `Bearer ${process.env.ADMIN_TOKEN}` } : {} }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "bin/simmeter.mjs"]
CMD ["start"]
