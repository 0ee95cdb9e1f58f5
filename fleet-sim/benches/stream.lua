-- wrk script: 256-token streamed chat completions (see fleet-sim/README.md).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"tiny","messages":[{"role":"user","content":"go"}],"max_tokens":256,"ignore_eos":true,"stream":true}'
