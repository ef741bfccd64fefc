import idna

print("corpus ok", idna.encode("fast-flow.example").decode())
