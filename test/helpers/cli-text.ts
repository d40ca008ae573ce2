/** oclif wraps error text to the terminal width with " ›" margins: undo that before matching phrases. */
export function flatCliText(text: string | string[]): string {
  return (Array.isArray(text) ? text.join(' ') : text).replace(/\s*›\s*/g, ' ').replace(/\s+/g, ' ');
}
