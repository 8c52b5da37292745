// The yardstick for npm run bench: a bare Express 5 JSON POST handler, nothing else. simmeter's
// receiver does strictly more (verify, group-commit to Redis); the ratio says what that costs.
import express from "express";

const app = express();
app.post(
  "/webhooks/event-streams",
  express.json({ limit: "10mb", type: () => true }),
  (req, res) => {
    res.status(200).json({ accepted: Array.isArray(req.body) ? req.body.length : 1 });
  },
);
const port = Number(process.env.PORT ?? 0);
const server = app.listen(port, "127.0.0.1", () => {
  const a = server.address();
  process.stdout.write(`listening ${typeof a === "object" && a ? a.port : port}\n`);
});
server.keepAliveTimeout = 65_000;
process.on("SIGTERM", () => server.close(() => process.exit(0)));
