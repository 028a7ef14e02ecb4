/**
 * How request bodies are read.
 *
 * Clients of the tools Switchyard replaces post JSON with whatever content
 * type curl picks (`curl -d '{…}'` says application/x-www-form-urlencoded), so
 * by default every body is read as JSON. Django REST framework's clients
 * (Portmaster) really post forms (`curl -d name=web-01`, Python
 * `requests.post(url, data=…)`): routes that take forms read a form-typed
 * body that is not JSON as a form, and multipart bodies as forms too.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { SwitchyardError } from '@switchyard/shared';

export interface BodyOptions {
  /** Read form-urlencoded (when not JSON) and multipart bodies into `{field: value}`. */
  forms?: boolean;
  /**
   * What a body that is not valid JSON becomes. Default: a 400 BAD_JSON before
   * the handler runs. Django REST framework parses lazily (a 405, GET or
   * DELETE never looks at the body), so Portmaster's routes keep the text
   * and decide in the handler.
   */
  onBadJson?: (text: string, error: Error) => unknown;
  /** What a JSON body becomes (fastify also calls "no body" null, so a route may want to tell `null` apart). */
  onJson?: (value: unknown) => unknown;
}

const FORM = 'application/x-www-form-urlencoded';
const MULTIPART = 'multipart/form-data';

function mediaType(req: FastifyRequest): string {
  return (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
}

/**
 * A form as Django's QueryDict reads it for a serializer: the last value of a
 * repeated field wins; `+` is a space.
 */
export function formFields(entries: Iterable<[string, unknown]>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of entries) if (typeof v === 'string') out[k] = v;
  return out;
}

/** Replaces the context's body parsers (fastify encapsulates them, so a plugin may set its own). */
export function installBodyParsers(app: FastifyInstance, options: BodyOptions = {}): void {
  const badJson =
    options.onBadJson ??
    ((_text: string, e: Error) => {
      throw new SwitchyardError('BAD_JSON', `Body is not valid JSON: ${e.message}`);
    });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: app.initialConfig.bodyLimit }, async (req: FastifyRequest, body: Buffer) => {
    const type = mediaType(req);
    if (options.forms && type === MULTIPART) {
      // undici's Response reads multipart/form-data as the fetch standard does.
      const form = await new Response(new Uint8Array(body), { headers: { 'content-type': String(req.headers['content-type']) } }).formData().catch((e: unknown) => {
        throw new SwitchyardError('INVALID', `Body is not valid multipart/form-data: ${(e as Error).message}`);
      });
      return formFields(form.entries());
    }
    const text = body.toString('utf8');
    if (text.trim() === '') return undefined;
    let value: unknown;
    try {
      value = JSON.parse(text) as unknown;
    } catch (e) {
      // A form-typed body that is JSON stays JSON (Portal's clients); one that is not is a form.
      if (options.forms && type === FORM) return formFields(new URLSearchParams(text).entries());
      return badJson(text, e as Error);
    }
    return options.onJson ? options.onJson(value) : value;
  });
}
