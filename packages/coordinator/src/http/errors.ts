/**
 * Turns anything thrown in a request into `{"error": message, "code": CODE}`
 * with the registry's status. Bad input is a 4xx, never a 5xx.
 */
import type { FastifyError, FastifyInstance } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { errorRegistry, isSwitchyardError, SwitchyardError, type ErrorCode } from '@switchyard/shared';

/** fastify's own error codes that are the client's fault. */
const fastifyCodes: Record<string, ErrorCode> = {
  FST_ERR_CTP_INVALID_JSON_BODY: 'BAD_JSON',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'BAD_JSON',
  FST_ERR_CTP_BODY_TOO_LARGE: 'BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'INVALID',
  FST_ERR_VALIDATION: 'INVALID',
};

export function describeValidation(err: FastifyError): string {
  if (hasZodFastifySchemaValidationErrors(err)) {
    return err.validation
      .map((v) => {
        const where = v.instancePath ? v.instancePath.replace(/^\//, '').replace(/\//g, '.') : '';
        const prefix = err.validationContext === 'body' ? 'body' : (err.validationContext ?? 'request');
        return `${prefix}${where ? '.' + where : ''}: ${v.message}`;
      })
      .join('; ');
  }
  return err.message;
}

export function toHttpError(err: unknown): SwitchyardError {
  if (isSwitchyardError(err)) return err;
  const fe = err as FastifyError;
  if (fe?.validation) return new SwitchyardError('INVALID', describeValidation(fe));
  if (fe?.code && fastifyCodes[fe.code]) {
    const code = fastifyCodes[fe.code];
    return new SwitchyardError(code, code === 'BAD_JSON' ? `Body is not valid JSON: ${fe.message}` : fe.message);
  }
  if (err instanceof SyntaxError) return new SwitchyardError('BAD_JSON', `Body is not valid JSON: ${err.message}`);
  if (typeof fe?.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return new SwitchyardError(fe.statusCode === 404 ? 'NOT_FOUND' : 'INVALID', fe.message);
  }
  return new SwitchyardError('INTERNAL', errorRegistry.INTERNAL.message, { cause: err });
}

export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err, request, reply) => {
    const e = toHttpError(err);
    if (e.status >= 500) request.log.error({ err }, 'request failed');
    else request.log.debug({ code: e.code, msg: e.message }, 'request refused');
    return reply.status(e.status).send({ error: e.message, code: e.code });
  });
  app.setNotFoundHandler((request, reply) => {
    return reply.status(404).send({ error: `Route ${request.method} ${request.url.split('?')[0]} not found`, code: 'NOT_FOUND' });
  });
}
