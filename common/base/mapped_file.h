#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace ringserve::base {

// How mapped memory will be read (a hint to the kernel, madvise).
enum class Access {
  kNormal,
  kSequential,  // read once, front to back: aggressive read-ahead
  kWillNeed,    // read soon and often: read it into the page cache now
};

// Advises the kernel that [data, data + bytes), inside a file mapping, will be read as `access`
// says; widened to whole pages. A hint: failures are ignored.
void AdviseMapped(const void* data, size_t bytes, Access access);

// A read-only memory map of a whole file. Its pages are the page cache's: every process that
// maps the file shares them. Owns the mapping; immutable and thread-safe.
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  std::string path_;
  const uint8_t* data_;
  size_t size_;
};

// Reads a whole (small) file into a string.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);
// Writes `contents` to `path`, replacing it.
absl::Status WriteStringToFile(const std::string& path, std::string_view contents);

}  // namespace ringserve::base
