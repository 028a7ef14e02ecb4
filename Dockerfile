# One image for every Switchyard process; the command picks the role
# (coordinator, agent). Build: docker build -t switchyard .
FROM node:20-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables conntrack iproute2 ipvsadm kmod \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json tsconfig.base.json ./
COPY packages ./packages
COPY scripts/build-ui.mjs ./scripts/
RUN npm ci --no-audit --no-fund && npm run build && npm prune --omit=dev
ENTRYPOINT ["node", "packages/cli/dist/main.js"]
