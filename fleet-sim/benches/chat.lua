-- wrk script: tiny non-streaming chat completions (see fleet-sim/README.md).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":4}'
