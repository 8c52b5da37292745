import type { Response } from "express";

export type ApiErrorCode = "invalid_parameter" | "unauthorized" | "not_found" | "internal_error";

/** The admin listener's one error body: { error: { code, message, param? } } (docs/json.md). */
export function apiError(
  res: Response,
  status: number,
  code: ApiErrorCode,
  message: string,
  param?: string,
): void {
  res.status(status).json({ error: { code, message, ...(param ? { param } : {}) } });
}
