import { createDocument, type ZodOpenApiPathsObject } from "zod-openapi";
import { VERSION } from "../lib/version.ts";
import { ApiError, ROUTES } from "./routes.ts";

const errorResponse = (description: string) => ({
  description,
  content: { "application/json": { schema: ApiError } },
});

/**
 * The admin API's OpenAPI 3.1 document, generated from the route table's zod schemas. Served at
 * /api/openapi.json and committed as docs/openapi.json (npm run openapi; a test keeps them equal).
 */
export function openApiDocument() {
  const paths: ZodOpenApiPathsObject = {};
  for (const r of ROUTES) {
    paths[r.path] = {
      get: {
        operationId: r.path
          .replace(/^\/api\//, "")
          .replace(/\{(\w+)\}/g, "by_$1")
          .replace(/\//g, "_"),
        summary: r.summary,
        description: r.description,
        tags: [r.tag],
        requestParams: { query: r.query, ...(r.path_params ? { path: r.path_params } : {}) },
        responses: {
          "200": { description: "OK", content: { "application/json": { schema: r.response } } },
          "400": errorResponse("a parameter is invalid (error.param names it)"),
          "401": errorResponse("ADMIN_TOKEN is set and the bearer token is missing or wrong"),
          ...(r.path_params ? { "404": errorResponse("no such object") } : {}),
        },
      },
    };
  }
  return createDocument({
    openapi: "3.1.0",
    info: {
      title: "simmeter admin API",
      version: VERSION,
      description:
        'Read-only operator API on the admin listener (ADMIN_HOST:ADMIN_PORT). Keys are snake_case, times ISO 8601 UTC, bytes integers; lists are {object: "list", data, has_more, next_starting_after} — pass next_starting_after back as starting_after for the next page. With ADMIN_TOKEN set, every request but GET /healthz needs `Authorization: Bearer <ADMIN_TOKEN>`.',
    },
    servers: [{ url: "http://127.0.0.1:8081" }],
    security: [{ bearer: [] }],
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
    },
    paths,
  });
}
