# fngate on Node, for Kubernetes (deploy/kubernetes/) or any container runtime. README "Deployment".
#   docker build -t fngate .
#   docker run -p 9080:9080 -p 7085:7085 -e ADMIN_KEY=... fngate

# Build: the TypeScript compiler is a devDependency. --ignore-scripts: the build needs no Bun/Deno binaries.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# Runtime dependencies only.
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    STATUS_HOST=0.0.0.0 \
    PROMETHEUS_HOST=0.0.0.0 \
    DATA_DIR=/var/lib/fngate
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
RUN mkdir -p /var/lib/fngate && chown 1000:1000 /var/lib/fngate && chmod 0700 /var/lib/fngate
# The image's `node` user, by number so that Kubernetes' runAsNonRoot can check it.
USER 1000:1000
# proxy, Admin API, status API, Prometheus export
EXPOSE 9080 9180 7085 9091
STOPSIGNAL SIGTERM
# Exec form: node is PID 1 and gets SIGTERM itself (no shell, no npm in between); it drains, passes the signal to
# its WORKERS and reaps them.
CMD ["node", "dist/runtime/node.js"]
