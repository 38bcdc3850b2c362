/**
 * A refused Session call, with a gRPC-style code (the control layer maps it
 * one to one) and a message that says what to do.
 */
export type SessionErrorCode = 'INVALID_ARGUMENT' | 'ALREADY_EXISTS' | 'FAILED_PRECONDITION' | 'NOT_FOUND'

export class SessionError extends Error {
  constructor(
    readonly code: SessionErrorCode,
    message: string,
  ) {
    super(message)
    this.name = 'SessionError'
  }
}
