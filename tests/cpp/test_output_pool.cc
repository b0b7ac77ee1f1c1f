// OutputPool (csrc/output_pool.h) on its own: no Paddle. Built and run by
// tests/test_output_pool.py; exits non-zero, naming the check, on a failure.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "output_pool.h"

#define CHECK(cond)                                             \
  do {                                                          \
    if (!(cond)) {                                              \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond); \
      return 1;                                                 \
    }                                                           \
  } while (0)

int main() {
  constexpr size_t kMiB = size_t{1} << 20;
  paddle_kure::OutputPool pool(kMiB, 8 * kMiB);
  CHECK(!pool.pools(kMiB - 1) && pool.pools(kMiB));

  // A buffer in use is never handed out twice; a released one is reused for its size only.
  void* a = pool.acquire(2 * kMiB);
  void* b = pool.acquire(2 * kMiB);
  CHECK(a != b);
  std::memset(a, 1, 2 * kMiB);  // the memory is really there
  pool.release(a, 2 * kMiB);
  CHECK(pool.idle_bytes() == 2 * kMiB);
  void* c = pool.acquire(3 * kMiB);
  CHECK(c != a && pool.reused() == 0);
  void* d = pool.acquire(2 * kMiB);
  CHECK(d == a && pool.reused() == 1 && pool.idle_bytes() == 0);

  // Alignment: whole cache lines, 2 MiB from 4 MiB up (huge pages).
  CHECK(reinterpret_cast<uintptr_t>(c) % 64 == 0);
  void* huge = pool.acquire(5 * kMiB);
  CHECK(reinterpret_cast<uintptr_t>(huge) % (2 * kMiB) == 0);

  // Idle memory is capped: the oldest idle buffers are freed first.
  pool.release(b, 2 * kMiB);     // idle: b (2)
  pool.release(c, 3 * kMiB);     // idle: b c (5)
  pool.release(huge, 5 * kMiB);  // 10 > 8: b goes, idle: c huge (8)
  CHECK(pool.idle_bytes() == 8 * kMiB);
  CHECK(pool.acquire(3 * kMiB) == c);
  CHECK(pool.acquire(5 * kMiB) == huge);
  void* fresh = pool.acquire(2 * kMiB);  // b was freed: nothing of this size is idle
  CHECK(pool.reused() == 3 && pool.idle_bytes() == 0);
  pool.release(fresh, 2 * kMiB);
  pool.release(d, 2 * kMiB);
  pool.release(c, 3 * kMiB);
  pool.release(huge, 5 * kMiB);  // 12 > 8: fresh and d go

  // Threads acquiring and releasing at once never share a buffer.
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&pool, &failures, t] {
      for (int i = 0; i < 200; ++i) {
        auto* p = static_cast<unsigned char*>(pool.acquire(kMiB));
        std::memset(p, t + 1, kMiB);
        std::this_thread::yield();
        for (size_t j = 0; j < kMiB; j += 4096) failures[t] += p[j] != t + 1;
        pool.release(p, kMiB);
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int f : failures) CHECK(f == 0);
  CHECK(pool.idle_bytes() <= 8 * kMiB);
  std::puts("output pool: all checks passed");
  return 0;
}
