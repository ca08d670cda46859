wrk.method = "POST"
wrk.body = '{"model": "m", "messages": [{"role": "user", "content": "hello"}]}'
wrk.headers["Content-Type"] = "application/json"
