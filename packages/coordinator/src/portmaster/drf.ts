/**
 * The parts of Django REST framework (DRF) that Portmaster's clients see
 * besides its serializers: how it reports a body that is not JSON, an unknown
 * object and a method a route does not take, and the shape of every error.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { errorRegistry, fail, PmRefusal, pmBodyObject, SwitchyardError } from '@switchyard/shared';
import { installBodyParsers } from '../http/body.js';
import { toHttpError } from '../http/errors.js';

/** A body that was not valid JSON, kept until a handler reads it (DRF parses lazily). */
export class UnparsedBody {
  constructor(readonly text: string) {}
}

/** A body that was the JSON text `null` (fastify's own null means "no body"). */
const JSON_NULL = Symbol('JSON null');

/** The body as a dictionary for a serializer, or DRF's ParseError for text that is not JSON. */
export function bodyObject(body: unknown): Record<string, unknown> {
  if (body instanceof UnparsedBody) throw fail('PM_BAD_JSON', `JSON parse error - ${pythonJsonError(body.text)}`);
  if (body === JSON_NULL) return pmBodyObject(null);
  return pmBodyObject(body ?? undefined);
}

/**
 * The message Python's `json.loads` (its C scanner, which CPython uses) gives
 * for text that is not JSON, e.g. "Expecting value: line 1 column 1 (char 0)":
 * DRF answers `{"detail": "JSON parse error - <that>"}`.
 */
export function pythonJsonError(text: string): string {
  const WS = ' \t\n\r';
  class Stop extends Error {
    constructor(
      readonly msg: string,
      readonly pos: number,
    ) {
      super(msg);
    }
  }
  const skip = (i: number) => {
    while (i < text.length && WS.includes(text[i])) i++;
    return i;
  };
  const string = (start: number): number => {
    // start: index after the opening quote
    let i = start;
    for (;;) {
      if (i >= text.length) throw new Stop('Unterminated string starting at', start - 1);
      const c = text[i];
      if (c === '"') return i + 1;
      if (c === '\\') {
        const esc = text[i + 1];
        if (esc === undefined) throw new Stop('Unterminated string starting at', start - 1);
        if (esc === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) throw new Stop('Invalid \\uXXXX escape', i + 1);
          i += 6;
        } else if ('"\\/bfnrt'.includes(esc)) i += 2;
        else throw new Stop('Invalid \\escape', i);
        continue;
      }
      if (c.charCodeAt(0) < 0x20) throw new Stop('Invalid control character at', i);
      i++;
    }
  };
  const value = (i: number): number => {
    const c = text[i];
    if (c === undefined) throw new Stop('Expecting value', i);
    if (c === '"') return string(i + 1);
    if (c === '{') return object(i + 1);
    if (c === '[') return array(i + 1);
    for (const word of ['null', 'true', 'false']) if (text.startsWith(word, i)) return i + word.length;
    // DRF's strict parse_constant (rest_framework/utils/json.py) refuses them, with their repr.
    for (const word of ['NaN', 'Infinity', '-Infinity']) if (text.startsWith(word, i)) throw new Stop(`Out of range float values are not JSON compliant: '${word}'`, -1);
    const m = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?/.exec(text.slice(i));
    if (!m) throw new Stop('Expecting value', i);
    return i + m[0].length;
  };
  const object = (start: number): number => {
    let i = skip(start);
    if (text[i] === '}') return i + 1;
    for (;;) {
      if (text[i] !== '"') throw new Stop('Expecting property name enclosed in double quotes', i);
      i = skip(string(i + 1));
      if (text[i] !== ':') throw new Stop("Expecting ':' delimiter", i);
      i = skip(value(skip(i + 1)));
      if (text[i] === '}') return i + 1;
      if (text[i] !== ',') throw new Stop("Expecting ',' delimiter", i);
      i = skip(i + 1);
    }
  };
  const array = (start: number): number => {
    let i = skip(start);
    if (text[i] === ']') return i + 1;
    for (;;) {
      i = skip(value(i));
      if (text[i] === ']') return i + 1;
      if (text[i] !== ',') throw new Stop("Expecting ',' delimiter", i);
      i = skip(i + 1);
    }
  };
  try {
    const end = skip(value(skip(0)));
    if (end !== text.length) throw new Stop('Extra data', end);
    return 'Expecting value: line 1 column 1 (char 0)';
  } catch (e) {
    if (!(e instanceof Stop)) throw e;
    if (e.pos < 0) return e.msg;
    const line = text.slice(0, e.pos).split('\n').length;
    const column = e.pos - (e.pos === 0 ? -1 : text.lastIndexOf('\n', e.pos - 1));
    return `${e.msg}: line ${line} column ${column} (char ${e.pos})`;
  }
}

/**
 * DRF's 405: `{"detail": "Method \"PATCH\" not allowed."}` with an Allow
 * header. `quote` is "'" where Portmaster's views write the answer themselves
 * (`"Method 'PATCH' not allowed."`, no Allow header), '"' where DRF does.
 */
export function methodNotAllowed(allowed: readonly string[], quote: '"' | "'" = '"') {
  return (req: FastifyRequest, reply: FastifyReply) => {
    // DRF lists the view's handlers in http_method_names order.
    if (quote === '"') reply.header('allow', [...allowed, 'HEAD', 'OPTIONS'].filter((m, i, a) => a.indexOf(m) === i).join(', '));
    return reply.code(errorRegistry.PM_METHOD_NOT_ALLOWED.status).send({ detail: `Method ${quote}${req.method}${quote} not allowed.` });
  };
}

/**
 * Portmaster's routes: bodies read as DRF reads them (JSON, forms, multipart;
 * text that is not JSON is reported when a handler reads it), and every error
 * in DRF's shape — a serializer's body as it is, anything else
 * `{"detail": message}` with the status it always has.
 */
export function installDrf(app: FastifyInstance): void {
  installBodyParsers(app, { forms: true, onBadJson: (text) => new UnparsedBody(text), onJson: (v) => (v === null ? JSON_NULL : v) });
  // Bodies are read by the handlers (bodyObject + the serializers in
  // @switchyard/shared); the route schemas' bodies only document them.
  app.setValidatorCompiler(() => (data: unknown) => ({ value: data }));
  app.setErrorHandler((err: FastifyError | SwitchyardError, request, reply) => {
    const e = toHttpError(err);
    if (e.status >= 500) request.log.error({ err }, 'request failed');
    else request.log.debug({ code: e.code, msg: e.message }, 'request refused');
    return reply.status(e.status).send(e instanceof PmRefusal ? e.body : { detail: e.message });
  });
}
