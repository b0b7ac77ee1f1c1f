// A cache of large CPU output buffers, reused by size.
//
// A new output tensor of a few megabytes is fresh memory: the allocator maps
// it on every call and the kernel then takes a page fault per 4 KiB page it
// writes, which costs more than the kernel itself (measured: writing a fresh
// 4 MB buffer took 15x a numpy copy into existing memory). A training loop asks
// for the same sizes every step, so a buffer kept from the previous step is
// already mapped. Header only and free of Paddle, so it is tested on its own.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <new>
#include <utility>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace paddle_kure {

class OutputPool {
 public:
  // Buffers of at least min_bytes are pooled; at most max_idle_bytes wait for reuse.
  OutputPool(size_t min_bytes, size_t max_idle_bytes)
      : min_bytes_(min_bytes), max_idle_bytes_(max_idle_bytes) {}
  OutputPool(const OutputPool&) = delete;
  OutputPool& operator=(const OutputPool&) = delete;
  ~OutputPool() {
    for (auto& entry : idle_) std::free(entry.second);
  }

  bool pools(size_t bytes) const { return bytes >= min_bytes_; }

  // A buffer of exactly `bytes`: the most recently released one of that size, or a new one.
  void* acquire(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto it = idle_.rbegin(); it != idle_.rend(); ++it) {
        if (it->first == bytes) {
          void* data = it->second;
          idle_bytes_ -= bytes;
          idle_.erase(std::next(it).base());
          ++reused_;
          return data;
        }
      }
    }
    return allocate(bytes);
  }

  // Takes a buffer back; the oldest idle buffers are freed beyond max_idle_bytes.
  void release(void* data, size_t bytes) {
    std::deque<std::pair<size_t, void*>> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      idle_.emplace_back(bytes, data);
      idle_bytes_ += bytes;
      while (idle_bytes_ > max_idle_bytes_) {
        evicted.push_back(idle_.front());
        idle_bytes_ -= idle_.front().first;
        idle_.pop_front();
      }
    }
    for (auto& entry : evicted) std::free(entry.second);
  }

  size_t idle_bytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return idle_bytes_;
  }
  size_t reused() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return reused_;
  }

 private:
  static constexpr size_t kHugePage = size_t{2} << 20;

  // 64-byte aligned (whole cache lines for vector stores); from 2 huge pages up,
  // aligned to 2 MiB and advised as huge pages (Linux transparent huge pages in
  // "madvise" mode), so even the first use faults once per 2 MiB.
  static void* allocate(size_t bytes) {
    const bool huge = bytes >= 2 * kHugePage;
    const size_t align = huge ? kHugePage : 64;
    void* data = std::aligned_alloc(align, (bytes + align - 1) / align * align);
    if (data == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (huge) madvise(data, bytes / kHugePage * kHugePage, MADV_HUGEPAGE);
#endif
    return data;
  }

  const size_t min_bytes_, max_idle_bytes_;
  mutable std::mutex mutex_;
  std::deque<std::pair<size_t, void*>> idle_;  // oldest first
  size_t idle_bytes_ = 0;
  size_t reused_ = 0;
};

}  // namespace paddle_kure
