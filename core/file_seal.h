// file_seal.h: the 512-byte header in front of qatlab's HDF5 files: a format tag and the SHA-256 of
// everything after it, so that a damaged file is refused before the HDF5 library parses it.
//
// HDF5 lets a file start with a "user block" it never reads (H5Pset_userblock); H5File::create
// reserves kSealBytes for it and H5File::close fills it in. The header is text, readable with
// `head -c 512 FILE`:
//
//     qatlab-h5 1
//     sha256 <64 hex digits: the SHA-256 of bytes [512, end)>
//     bytes <how many bytes follow the header>
//
// then zeros up to byte 512. Files written before the header existed start with the HDF5 signature
// at byte 0; they still load, unverified.
#pragma once

#include <cstdint>
#include <string>

namespace qatlab {

constexpr int64_t kSealBytes = 512;

// Writes the header into the first kSealBytes of the closed file at path (whose HDF5 content starts at
// byte kSealBytes). Throws std::runtime_error "<path>: ..." on any I/O failure.
void seal_file(const std::string& path);

enum class SealState { kVerified, kUnsealed };

// Checks the file at path before anything parses it: kVerified when the header is there and the
// content matches it, kUnsealed for a file that starts with the HDF5 signature (written before the
// header existed). Throws std::runtime_error with one line naming path otherwise: a damaged or
// unknown header, a size or checksum that does not match (the file was changed or cut short after
// it was written), a newer format version.
SealState verify_sealed_file(const std::string& path);

}  // namespace qatlab
