/**
 * The baseline for GET /services/:id: a bare fastify route returning the
 * same service JSON from a Map, no etcd, no validation, no auth.
 * Usage: bare-fastify.ts <services.json> <port>
 */
import { readFileSync } from 'node:fs';
import fastify from 'fastify';

const [file, port] = process.argv.slice(2);
const services = new Map<string, unknown>((JSON.parse(readFileSync(file, 'utf8')) as { id: string }[]).map((s) => [s.id, s]));
const app = fastify({ logger: false });
app.get<{ Params: { id: string } }>('/services/:id', async (req, reply) => {
  const s = services.get(req.params.id);
  if (!s) return reply.status(404).send({ error: 'No Service Found' });
  return s;
});
await app.listen({ host: '127.0.0.1', port: Number(port) });
process.stderr.write(`bare fastify listening on ${port}\n`);
