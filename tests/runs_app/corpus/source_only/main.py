import snowplow_tracker

print("corpus ok", snowplow_tracker.__name__)
