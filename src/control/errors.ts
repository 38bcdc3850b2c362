/**
 * Every failure of a control call leaves as a gRPC status with a message that
 * says what is wrong; nothing a client sends can take the daemon down.
 */
import { type CallContext, ServerError, type ServerMiddlewareCall, Status } from 'nice-grpc-common'
import type { Logger } from 'pino'

const BY_NAME: Record<string, Status> = {
  INVALID_ARGUMENT: Status.INVALID_ARGUMENT,
  NOT_FOUND: Status.NOT_FOUND,
  ALREADY_EXISTS: Status.ALREADY_EXISTS,
  FAILED_PRECONDITION: Status.FAILED_PRECONDITION,
  RESOURCE_EXHAUSTED: Status.RESOURCE_EXHAUSTED,
  UNAVAILABLE: Status.UNAVAILABLE,
  UNIMPLEMENTED: Status.UNIMPLEMENTED,
}

/** Errors thrown while reading a torrent: the request's bytes are at fault. */
const INPUT_ERRORS = new Set(['TorrentError', 'ExtentError'])

/** The gRPC status for an error thrown by the Session or by request parsing. */
export function toServerError(err: unknown): ServerError {
  if (err instanceof ServerError) return err
  const e = err as { name?: string; code?: unknown; message?: string }
  const message = e?.message ?? String(err)
  if (typeof e?.code === 'string' && e.code in BY_NAME) return new ServerError(BY_NAME[e.code], message)
  if (e?.name && INPUT_ERRORS.has(e.name)) return new ServerError(Status.INVALID_ARGUMENT, `bad torrent: ${message}`)
  return new ServerError(Status.INTERNAL, message)
}

/** Server middleware: translate and log errors; a cancelled call is passed on as it is. */
export function errorMiddleware(log?: Logger) {
  return async function* translateErrors<Req, Res>(call: ServerMiddlewareCall<Req, Res>, context: CallContext) {
    try {
      return yield* call.next(call.request as never, context)
    } catch (err) {
      if ((err as Error)?.name === 'AbortError') throw err
      const out = toServerError(err)
      const fields = { method: call.method.path, code: Status[out.code], details: out.details }
      if (out.code === Status.INTERNAL) log?.error({ ...fields, err }, 'control call failed')
      else log?.info(fields, 'control call refused')
      throw out
    }
  }
}
