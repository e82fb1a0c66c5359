/**
 * An error meant for the user: its message names the file, field or value at fault and what
 * was expected. The CLI prints it without a stack trace.
 */
export class DsvError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DsvError';
  }
}
