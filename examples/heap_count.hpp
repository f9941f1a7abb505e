// examples/heap_count.hpp: counts the heap a program holds, by replacing the
// global operator new and delete (polar's host buffers use the aligned
// form). Include it in exactly one translation unit of a program: it
// defines the replacements.
//
//   heap_count::live()          bytes held now
//   heap_count::peak()          the most held at once since the last reset_peak()
//   heap_count::allocations()   calls of operator new so far
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace heap_count {

inline std::atomic<long long> live_bytes{0}, peak_bytes{0}, calls{0};

inline void note(long long delta) noexcept {
  const long long now = live_bytes.fetch_add(delta) + delta;
  long long p = peak_bytes.load();
  while (now > p && !peak_bytes.compare_exchange_weak(p, now)) {
  }
}

// Each block carries its size in a header as wide as its alignment.
inline void* take(std::size_t n, std::size_t align) {
  const std::size_t header = align < 16 ? 16 : align;
  void* raw = std::aligned_alloc(header, ((n + header + header - 1) / header) * header);
  if (!raw) throw std::bad_alloc();
  *static_cast<std::size_t*>(raw) = n;
  note(static_cast<long long>(n));
  calls.fetch_add(1);
  return static_cast<char*>(raw) + header;
}

inline void give(void* p, std::size_t align) noexcept {
  if (!p) return;
  const std::size_t header = align < 16 ? 16 : align;
  void* raw = static_cast<char*>(p) - header;
  note(-static_cast<long long>(*static_cast<std::size_t*>(raw)));
  std::free(raw);
}

inline long long live() noexcept { return live_bytes.load(); }
inline long long peak() noexcept { return peak_bytes.load(); }
inline void reset_peak() noexcept { peak_bytes.store(live_bytes.load()); }
inline long long allocations() noexcept { return calls.load(); }

}  // namespace heap_count

void* operator new(std::size_t n) { return heap_count::take(n, 16); }
void* operator new[](std::size_t n) { return heap_count::take(n, 16); }
void* operator new(std::size_t n, std::align_val_t a) { return heap_count::take(n, std::size_t(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return heap_count::take(n, std::size_t(a)); }
void operator delete(void* p) noexcept { heap_count::give(p, 16); }
void operator delete[](void* p) noexcept { heap_count::give(p, 16); }
void operator delete(void* p, std::size_t) noexcept { heap_count::give(p, 16); }
void operator delete[](void* p, std::size_t) noexcept { heap_count::give(p, 16); }
void operator delete(void* p, std::align_val_t a) noexcept { heap_count::give(p, std::size_t(a)); }
void operator delete[](void* p, std::align_val_t a) noexcept { heap_count::give(p, std::size_t(a)); }
void operator delete(void* p, std::size_t, std::align_val_t a) noexcept { heap_count::give(p, std::size_t(a)); }
void operator delete[](void* p, std::size_t, std::align_val_t a) noexcept { heap_count::give(p, std::size_t(a)); }
