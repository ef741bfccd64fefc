from dateutil import parser

print("corpus ok", parser.parse("2026-12-06").year)
