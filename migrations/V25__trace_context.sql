-- Issue 16: the W3C trace context of the span that committed each stage job, so that the job a
-- relay pushes later (Redis was away, a worker died) continues the run's one trace. NULL when
-- tracing is off.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
