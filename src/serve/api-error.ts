/**
 * Errors of the OpenAI-compatible API: an HTTP status and the OpenAI error body
 * `{"error": {"message", "type", "param", "code"}}`, whose message names the problem (the
 * parameter, the value, what was expected), as the official clients expect.
 */
export type ApiErrorType = 'invalid_request_error' | 'authentication_error' | 'not_found_error' | 'rate_limit_error' | 'server_error';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type: ApiErrorType = status >= 500 ? 'server_error' : 'invalid_request_error',
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** The response body. */
  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** 400 for a parameter: `param` is named in the message and in the body. */
export function badParam(param: string, message: string, code = 'invalid_value'): ApiError {
  return new ApiError(400, message, param, code);
}
