// Atomic file and folder writes (temporary name + fsync + rename) and read_file.
#include "io/atomic_file.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc >= 2.28)
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace llmtune {

namespace fs = std::filesystem;

namespace {

std::string errno_str() { return std::strerror(errno); }

std::string parent_dir_of(const std::string& path) {
  fs::path p = fs::path(path).parent_path();
  return p.empty() ? std::string(".") : p.string();
}

// Makes a rename durable: the directory entry itself has to reach the disk. Filesystems that cannot
// fsync a directory (EINVAL) are fine to ignore: the rename is still atomic there.
void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

bool write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= size_t(w);
  }
  return true;
}

// Removes a folder tree, ignoring errors (used for clean-up paths only).
void remove_tree_quietly(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
}

}  // namespace

void write_file_atomic_parts(const std::string& path, const std::vector<std::string_view>& parts) {
  const std::string tmp = cat(path, ".tmp.", ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot write ", path, ": cannot create ", tmp, ": ", errno_str());
  auto abandon = [&](const std::string& what) {
    std::string err = errno_str();
    ::close(fd);
    ::unlink(tmp.c_str());
    fail("cannot write ", path, ": ", what, ": ", err);
  };
  for (std::string_view part : parts)
    if (!write_all(fd, part.data(), part.size())) abandon("write failed");
  if (::fsync(fd) != 0) abandon("fsync failed");
  if (::close(fd) != 0) {
    std::string err = errno_str();
    ::unlink(tmp.c_str());
    fail("cannot write ", path, ": close failed: ", err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string err = errno_str();
    ::unlink(tmp.c_str());
    fail("cannot write ", path, ": rename from ", tmp, " failed: ", err);
  }
  fsync_dir(parent_dir_of(path));
}

void write_file_atomic(const std::string& path, std::string_view bytes) { write_file_atomic_parts(path, {bytes}); }

std::string read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open ", path, ": ", errno_str());
  std::string out;
  struct stat st;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) out.reserve(size_t(st.st_size));
  char buf[1 << 16];
  for (;;) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      std::string err = errno_str();
      ::close(fd);
      fail("cannot read ", path, ": ", err);
    }
    if (r == 0) break;
    out.append(buf, size_t(r));
  }
  ::close(fd);
  return out;
}

void write_dir_atomic(const std::string& dir_in, const std::function<void(const std::string&)>& fill) {
  // "out/ckpt/" and "out/ckpt" must name the same folder (a trailing slash would put the temporary
  // folder inside the target).
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const std::string tmp = cat(dir, ".tmp.", ::getpid());
  const std::string parent = parent_dir_of(dir);

  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) fail("cannot create folder ", parent, ": ", ec.message());
  struct stat st;
  const bool target_exists = ::lstat(dir.c_str(), &st) == 0;
  if (target_exists && !S_ISDIR(st.st_mode)) fail("cannot write folder ", dir, ": it exists and is not a folder");

  remove_tree_quietly(tmp);  // a stale one left by a crashed process that had our pid
  if (::mkdir(tmp.c_str(), 0755) != 0) fail("cannot create folder ", tmp, ": ", errno_str());
  try {
    fill(tmp);
  } catch (...) {
    remove_tree_quietly(tmp);
    throw;
  }
  fsync_dir(tmp);

  if (!target_exists) {
    if (::rename(tmp.c_str(), dir.c_str()) != 0) {
      std::string err = errno_str();
      remove_tree_quietly(tmp);
      fail("cannot write folder ", dir, ": rename from ", tmp, " failed: ", err);
    }
  } else if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
    // One atomic step: `dir` is now the new folder and `tmp` holds the old one.
    remove_tree_quietly(tmp);
  } else if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) {
    // Filesystem without RENAME_EXCHANGE: move the old folder aside first. Between the two renames
    // `dir` is briefly absent, but the old folder survives under .old.<pid> until the new one is in.
    const std::string old = cat(dir, ".old.", ::getpid());
    remove_tree_quietly(old);
    if (::rename(dir.c_str(), old.c_str()) != 0) {
      std::string err = errno_str();
      remove_tree_quietly(tmp);
      fail("cannot write folder ", dir, ": cannot move the old one aside to ", old, ": ", err);
    }
    if (::rename(tmp.c_str(), dir.c_str()) != 0) {
      std::string err = errno_str();
      ::rename(old.c_str(), dir.c_str());  // put the old folder back
      remove_tree_quietly(tmp);
      fail("cannot write folder ", dir, ": rename from ", tmp, " failed: ", err);
    }
    remove_tree_quietly(old);
  } else {
    std::string err = errno_str();
    remove_tree_quietly(tmp);
    fail("cannot write folder ", dir, ": rename from ", tmp, " failed: ", err);
  }
  fsync_dir(parent);
}

}  // namespace llmtune
