// atomic_file.h: write a file so that a crash or an error never leaves it half-written: the new
// content goes to a temporary file beside it, which is synced and then renamed over the target.
//
// After a successful call the target holds the new content and survives a power loss; after a
// failed call (the writer threw, the disk is full, ...) the target is exactly what it was before and
// no temporary file is left behind. The temporary file is "<path>.tmp-<pid>"; two threads of one
// process must not write the same path at the same time. A process killed mid-write cannot clean up:
// the next write of the same path removes the "<path>.tmp-<pid>" files whose process no longer exists.
#pragma once

#include <functional>
#include <string>

namespace qatlab {

class H5File;

// Calls write(tmp_path), which must create and fully write (and close) the file tmp_path; then fsyncs
// it, renames it over path and fsyncs the directory. If write throws, tmp_path is removed and the
// exception rethrown. Throws std::runtime_error "<path>: ..." when the directory of path does not
// exist or is not writable, or when syncing or renaming fails.
void atomic_write_file(const std::string& path, const std::function<void(const std::string& tmp_path)>& write);

// Replaces path with exactly `content` (bytes, no newline added).
void atomic_write_text(const std::string& path, const std::string& content);

// Creates a fresh HDF5 file, lets fill() write into it, closes it and puts it in place atomically.
// HDF5 errors inside fill() name path rather than the temporary file.
void atomic_save_h5(const std::string& path, const std::function<void(H5File&)>& fill);

}  // namespace qatlab
