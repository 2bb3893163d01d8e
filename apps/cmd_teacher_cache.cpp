// cmd_teacher_cache.cpp: `qatlab teacher-cache --distill A [--distill B] --out FILE`: a distillation
// teacher's outputs for every crop and flip of every training image, computed once (nn/train/teacher_cache.h),
// for `qat` and `sweep` runs that distil from the same teachers on the same data (--teacher-cache,
// --qat-teacher-cache) to read instead of running the teachers.
#include <cstdio>
#include <filesystem>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/data_setup.h"
#include "apps/train_options.h"
#include "nn/checkpoint.h"
#include "nn/train/teacher.h"
#include "nn/train/teacher_cache.h"

namespace qatlab {

int cmd_teacher_cache(int argc, char** argv) {
  std::vector<std::string> teachers;
  std::string out;
  DataSettings d;
  int64_t batch_size = 256;
  int threads = 0;
  bool overwrite = false, check = false;
  po::options_description desc("teacher-cache options");
  desc.add_options()
      ("distill", po::value(&teachers)->composing(),
       "a float checkpoint, the teacher (repeat it for an ensemble, in the order the runs give them)")
      ("out", po::value(&out),
       "the cache file to write (HDF5); a file there already made for these teachers, data and float kernels is "
       "kept as it is (nothing to do)")
      ("overwrite", po::bool_switch(&overwrite), "allow --out to replace an existing file made for something else")
      ("check", po::bool_switch(&check),
       "make nothing: exit 0 if --out is up to date for these teachers, data and float kernels, 1 if not (scripts "
       "pass --teacher-cache only then)")
      ("batch-size", po::value(&batch_size)->default_value(batch_size), "images per forward pass of the teachers")
      ("threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)");
  add_data_options(desc, d);
  po::variables_map vm;
  if (!parse_command("teacher-cache", "--distill TEACHER [--distill ...] --out FILE [options]", desc,
                     po::positional_options_description(), argc, argv, vm))
    return 0;
  require(!teachers.empty(), "name the teacher: --distill CHECKPOINT (repeat it for an ensemble)");
  require(!out.empty(), "name the file to write: --out FILE");
  require_batch_size("batch-size", batch_size);
  require_threads("threads", threads);
  apply_threads(threads);

  // The data as the distilled runs see it: the first teacher's dataset and normalisation unless given
  // (a QAT run's float model is normally its teacher; load_teachers checks that all of them agree).
  const Checkpoint first = load_checkpoint(teachers.front());
  const DataRecord record = data_record(first);
  use_model_dataset(d, vm["dataset"].defaulted(), record);
  DataBundle data = load_data(d, /*with_train=*/true, &record);
  if (data.cutout > 0)
    throw UsageError("--augment has cutout: its square is drawn anew for every row and cannot be cached (leave it out)");
  ModulePtr teacher;
  try {
    teacher = load_teachers(teachers, data);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string(e.what()) + " (--distill)");
  }
  const TeacherCacheKey key = teacher_cache_key(teachers, data);
  if (TeacherCache::up_to_date(out, key)) {
    std::printf("%s is up to date (made for these teachers, data and float kernels)%s\n", out.c_str(),
                check ? "" : ": nothing to do");
    return 0;
  }
  if (check) {
    std::printf("%s is %s\n", out.c_str(),
                std::filesystem::exists(out) ? "not up to date (made for other teachers, data or float kernels, or damaged)"
                                             : "missing");
    return 1;
  }
  guard_output("--out", out, overwrite);
  LoaderOptions lo = loader_options(data, batch_size, 0, /*train=*/true);
  lo.prefetch = false;
  const DataLoader loader(data.train, lo);
  const int64_t variants = teacher_cache_variants(key.crop_pad, key.hflip);
  std::printf("teacher cache: %zu teacher network%s on %s, %lld training images x %lld variants (crop %lld, %s), "
              "float kernels %s -> %s\n",
              teachers.size(), teachers.size() == 1 ? "" : "s", data.source.c_str(),
              static_cast<long long>(key.samples), static_cast<long long>(variants),
              static_cast<long long>(key.crop_pad), key.hflip ? "flip" : "no flip", key.kernels.c_str(), out.c_str());
  std::fflush(stdout);
  TeacherCache::build(*teacher, loader, key, out, batch_size, stdout);
  std::printf("wrote %s\n", out.c_str());
  return 0;
}

}  // namespace qatlab
