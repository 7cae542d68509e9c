-- wrk script: one single-event inbox webhook per request, each with a webhook_id of its own
-- (the same id twice would only measure deduplication).
local counter = 0
local prefix = tostring(os.time()) .. "_" .. tostring(math.random(1000000))

request = function()
  counter = counter + 1
  local body = string.format(
    '[{"webhook_id":"wrk_%s_%d","webhook_type":"inbox_message","username":"bench",'
      .. '"message":{"id":"%d","date":"2026-11-26 10:00:00","sender":"32470%06d",'
      .. '"receiver":"32460200000","content":"benchmark message","type":"sms"}}]',
    prefix, counter, counter, counter % 100)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
