"""Allocates more memory than its mem_hard_limit allows: the run ends as "out of memory"."""

chunks = []
for megabytes in range(1, 513):
    chunks.append(bytearray(1024 * 1024))
    if megabytes % 32 == 0:
        print(f"holding {megabytes} MiB", flush=True)
print("still alive: the memory limit was not enforced")
