# Wharf's container image: a build stage that compiles the TypeScript with the dev dependencies, and a runtime stage
# with the production dependencies only, running as an unprivileged user.
#
#   docker build -t wharf:dev .
#   docker run -d -p 5000:5000 -v wharf-data:/var/lib/registry wharf:dev
#
# See docs/container-image.md for build arguments, the default configuration and the health check.

# Node.js LTS line the image runs on (both stages use the same one).
ARG NODE_VERSION=24

# ---- build: compile TypeScript to dist/ ---------------------------------------------------------------------------
FROM node:${NODE_VERSION}-slim AS build
WORKDIR /src
# Dependencies first, so this layer is reused while only the sources change.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
# `npm run build` compiles the product only (tsconfig.build.json: no *.test.ts, testing/, bench/ or helm/), and
# .dockerignore leaves those out of the context too, so dist/ holds no tests or test helpers
RUN npm run build

# ---- runtime: production dependencies and the compiled code ---------------------------------------------------------
FROM node:${NODE_VERSION}-slim AS runtime
ENV NODE_ENV=production \
    WHARF_HEALTHCHECK_URL=http://127.0.0.1:5000/healthz
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force
COPY --from=build /src/dist ./dist

# An unprivileged user with a fixed id (the Helm chart's runAsUser), the data directory it owns, the `wharf` command,
# and a default configuration: registry:2's, filesystem storage under /var/lib/registry, listening on :5000.
RUN groupadd --system --gid 10001 wharf \
 && useradd --system --uid 10001 --gid wharf --home-dir /var/lib/registry --no-create-home --shell /usr/sbin/nologin wharf \
 && mkdir -p /etc/wharf /var/lib/registry \
 && chown wharf:wharf /var/lib/registry \
 && chmod 0755 dist/server/cli.js \
 && ln -s /app/dist/server/cli.js /usr/local/bin/wharf \
 && printf '%s\n' \
      'version: 0.1' \
      'log:' \
      '  fields:' \
      '    service: registry' \
      'storage:' \
      '  filesystem:' \
      '    rootdirectory: /var/lib/registry' \
      'http:' \
      '  addr: :5000' \
      '  headers:' \
      '    X-Content-Type-Options: [nosniff]' \
      > /etc/wharf/config.yml

USER 10001:10001
VOLUME ["/var/lib/registry"]
# 5000: the registry API (http.addr); 5001: the debug/metrics listener when http.debug.addr is set.
EXPOSE 5000 5001

# Healthy while the liveness endpoint answers 200. Set WHARF_HEALTHCHECK_URL when http.addr moves to another port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.WHARF_HEALTHCHECK_URL, {signal: AbortSignal.timeout(4000)}).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

ENTRYPOINT ["wharf"]
CMD ["serve", "/etc/wharf/config.yml"]
