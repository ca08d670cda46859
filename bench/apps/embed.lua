-- One short text per request, cycling through a few, like independent clients.
counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local body = string.format('{"model": "all-MiniLM-L6-v2", "input": "sentence number %d: a short text about topic %d for the benchmark"}', counter, counter % 17)
  return wrk.format(nil, nil, nil, body)
end
