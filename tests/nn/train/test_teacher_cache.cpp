// test_teacher_cache.cpp: a teacher's outputs computed ahead (nn/train/teacher_cache.h): every cached row is
// the live teacher's output for that crop and flip bit for bit; a distilled run reading the cache trains
// exactly as one running the teacher (chunked too); a file made for other teachers, data or augmentation is
// refused naming what differs; rows with cutout fall back to the teacher; a cache whose rows are wrong
// stops the run at its first batch. The task: quadrant_data.h.
#include "nn/train/teacher_cache.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/h5io.h"
#include "core/rng.h"
#include "nn/checkpoint.h"
#include "nn/train/quadrant_data.h"
#include "nn/train/quadrant_run.h"
#include "nn/train/teacher.h"
#include "nn/train/train_run.h"

namespace qatlab {
namespace {

namespace fs = std::filesystem;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

class TeacherCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("qatlab_test_teacher_cache_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    data_.crop_pad = 1;
    data_.hflip = true;
    teacher_path_ = trained("teacher", 5, 2);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  TrainRun quadrant_run(uint64_t seed, int64_t epochs, const std::string& out) {
    return test::quadrant_run(data_, seed, epochs, out);
  }
  std::string trained(const std::string& name, uint64_t seed, int64_t epochs) {
    TrainRun run = quadrant_run(seed, epochs, path(name));
    train_model(run);
    return path(name) + "/checkpoint.h5";
  }
  // The cache of the teacher(s) on data_, written to dir/<name>.
  std::string built(const std::string& name, const std::vector<std::string>& teachers) {
    const ModulePtr teacher = load_teachers(teachers, data_);
    LoaderOptions lo = loader_options(data_, 32, 0, true);
    lo.prefetch = false;
    const DataLoader loader(data_.train, lo);
    TeacherCache::build(*teacher, loader, teacher_cache_key(teachers, data_), path(name), 50, nullptr);
    return path(name);
  }
  std::string load_error(const std::string& file, const TeacherCacheKey& key) const {
    try {
      TeacherCache::load(file, key);
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  }

  DataBundle data_ = test::quadrant_data();
  fs::path dir_;
  std::string teacher_path_;
};

// Every variant of a sample of the images: the cached row equals the live teacher's output on the image
// the loader makes for that crop and flip, in a batch of other rows.
TEST_F(TeacherCacheTest, EveryCachedRowIsTheLiveTeachersOutput) {
  const std::string second = trained("second", 9, 1);
  for (const std::vector<std::string>& teachers : {std::vector<std::string>{teacher_path_}, {teacher_path_, second}}) {
    const TeacherCache cache = TeacherCache::load(built("cache.h5", teachers), teacher_cache_key(teachers, data_));
    EXPECT_EQ(cache.variants(), 18);  // (2 * 1 + 1)^2 crops, 2 flips
    const ModulePtr teacher = load_teachers(teachers, data_);
    teacher->eval();
    const DataLoader loader(data_.train, loader_options(data_, 32, 0, true));
    std::vector<SampleOrigin> origins;
    Rng rng(3);
    for (int i = 0; i < 40; ++i)
      origins.push_back(SampleOrigin{static_cast<int64_t>(rng.below(512)), static_cast<int32_t>(rng.below(3)) - 1,
                                     static_cast<int32_t>(rng.below(3)) - 1, rng.below(2) == 1, false});
    Batch batch;
    loader.make_variants(origins, batch);
    NoGradGuard no_grad;
    const Tensor live = teacher->forward(batch.images);
    const std::optional<Tensor> cached = cache.rows(origins);
    ASSERT_TRUE(cached.has_value());
    ASSERT_EQ(cached->shape(), live.shape());
    EXPECT_EQ(cached->to_vector(), live.to_vector()) << teachers.size() << " teacher(s)";
    // A row with cutout cannot be looked up; one outside the cache is an error.
    origins[7].cutout = true;
    EXPECT_FALSE(cache.rows(origins).has_value());
    EXPECT_THROW(cache.rows(std::vector<SampleOrigin>{SampleOrigin{512}}), std::invalid_argument);
    EXPECT_THROW(cache.rows(std::vector<SampleOrigin>{SampleOrigin{0, 2, 0}}), std::invalid_argument);
  }
}

// A teacher that stops working after `budget` forward passes (a build cut short by a session's end), and
// counts them.
class StoppingTeacher : public Module {
 public:
  StoppingTeacher(ModulePtr inner, int64_t budget) : Module("StoppingTeacher"), budget_(budget) {
    register_module("inner", std::move(inner));
  }
  Tensor forward(const Tensor& x) override {
    if (calls_ == budget_) throw std::runtime_error("stopped");
    ++calls_;
    return (*children().front().second)(x);
  }
  int64_t calls() const { return calls_; }

 private:
  int64_t budget_, calls_ = 0;
};

// A build stopped part way goes on from the parts it finished, and gives the file a whole build gives.
TEST_F(TeacherCacheTest, AStoppedBuildGoesOnFromItsFinishedParts) {
  const std::vector<std::string> teachers{teacher_path_};
  const TeacherCacheKey key = teacher_cache_key(teachers, data_);
  LoaderOptions lo = loader_options(data_, 32, 0, true);
  lo.prefetch = false;
  const DataLoader loader(data_.train, lo);
  // 512 images x 18 variants in batches of 50: 185 passes in all, about 9 a part (20 parts of 25-26 images).
  StoppingTeacher stopped(load_teachers(teachers, data_), 60);
  EXPECT_THROW(TeacherCache::build(stopped, loader, key, path("resumed.h5"), 50, nullptr), std::runtime_error);
  EXPECT_FALSE(fs::exists(path("resumed.h5")));
  EXPECT_TRUE(fs::exists(path("resumed.h5.parts/part-0.h5")));
  StoppingTeacher rest(load_teachers(teachers, data_), 1000);
  TeacherCache::build(rest, loader, key, path("resumed.h5"), 50, nullptr);
  EXPECT_LT(rest.calls(), 150);  // the finished parts were not made again
  EXPECT_FALSE(fs::exists(path("resumed.h5.parts")));
  const TeacherCache resumed = TeacherCache::load(path("resumed.h5"), key);
  const TeacherCache whole = TeacherCache::load(built("whole.h5", teachers), key);
  std::vector<SampleOrigin> all;
  for (int64_t n = 0; n < 512; ++n)
    for (int32_t oy = -1; oy <= 1; ++oy)
      for (int32_t ox = -1; ox <= 1; ++ox)
        for (const bool flip : {false, true}) all.push_back(SampleOrigin{n, oy, ox, flip, false});
  EXPECT_EQ(resumed.rows(all)->to_vector(), whole.rows(all)->to_vector());
}

// A distilled run reading the cache is the run computing its teacher, bit for bit: the same history and
// weights, with whole batches and with chunked ones.
TEST_F(TeacherCacheTest, ADistilledRunReadingTheCacheTrainsExactlyAsOneRunningTheTeacher) {
  const std::string file = built("cache.h5", {teacher_path_});
  const auto cache = std::make_shared<const TeacherCache>(TeacherCache::load(file, teacher_cache_key({teacher_path_}, data_)));
  for (const int64_t chunks : {int64_t{1}, int64_t{4}}) {
    std::vector<std::vector<float>> weights[2];
    std::vector<MetricsRow> history[2];
    for (int with_cache = 0; with_cache < 2; ++with_cache) {
      TrainRun run = quadrant_run(21, 2, path("student" + std::to_string(chunks) + std::to_string(with_cache)));
      run.teacher = load_teachers({teacher_path_}, data_);
      if (with_cache) run.teacher_cache = cache;
      run.settings.distill_weight = 0.7f;
      run.settings.distill_temperature = 2.0f;
      run.settings.grad_chunks = chunks;
      history[with_cache] = train_model(run).history;
      for (const auto& [name, t] : run.model->named_parameters()) weights[with_cache].push_back(t.to_vector());
    }
    EXPECT_EQ(weights[0], weights[1]) << chunks << " chunks";
    ASSERT_EQ(history[0].size(), history[1].size());
    for (size_t e = 0; e < history[0].size(); ++e)
      for (const char* column : {"train_loss", "train_acc", "test_loss", "test_acc"})
        EXPECT_EQ(history[0][e].at(column), history[1][e].at(column)) << "epoch " << e << " " << column;
  }
}

// Rows that are not the teacher's (here: another network's cache under this teacher's key) stop the run
// at its first batch, naming the row.
TEST_F(TeacherCacheTest, AWrongCacheStopsTheRunAtItsFirstBatch) {
  const std::string other = trained("other", 13, 1);
  // The other network's outputs, filed under the teacher's key.
  const ModulePtr teacher = load_teachers({other}, data_);
  LoaderOptions lo = loader_options(data_, 32, 0, true);
  lo.prefetch = false;
  const DataLoader loader(data_.train, lo);
  const TeacherCacheKey key = teacher_cache_key({teacher_path_}, data_);
  TeacherCache::build(*teacher, loader, key, path("wrong.h5"), 64, nullptr);
  TrainRun run = quadrant_run(21, 1, path("student"));
  run.teacher = load_teachers({teacher_path_}, data_);
  run.teacher_cache = std::make_shared<const TeacherCache>(TeacherCache::load(path("wrong.h5"), key));
  try {
    train_model(run);
    FAIL() << "the run accepted a cache of another network's outputs";
  } catch (const std::runtime_error& e) {
    EXPECT_TRUE(contains(e.what(), "teacher cache's outputs differ from the live teacher's on the first batch (row ")) << e.what();
  }
}

// A cache made for other teachers, data, augmentation or kernels is refused naming what differs; a file that
// is not a cache, or whose logits are cut short, too.
TEST_F(TeacherCacheTest, AFileMadeForSomethingElseIsRefusedNamingTheDifference) {
  const std::string file = built("cache.h5", {teacher_path_});
  const TeacherCacheKey good = teacher_cache_key({teacher_path_}, data_);
  EXPECT_EQ(load_error(file, good), "");
  const std::string second = trained("second", 9, 1);
  EXPECT_TRUE(contains(load_error(file, teacher_cache_key({teacher_path_, second}, data_)), "made for teachers (SHA-256)"));
  TeacherCacheKey k = good;
  k.crop_pad = 4;
  EXPECT_TRUE(contains(load_error(file, k), "made for crop_pad 1, this run has 4")) << load_error(file, k);
  k = good;
  k.hflip = false;
  EXPECT_TRUE(contains(load_error(file, k), "made for hflip on, this run has off"));
  k = good;
  k.samples = 256;
  EXPECT_TRUE(contains(load_error(file, k), "made for training images 512, this run has 256"));
  k = good;
  k.std = {0.25f};
  EXPECT_TRUE(contains(load_error(file, k), "made for std"));
  k = good;
  k.kernels = "portable";
  EXPECT_TRUE(contains(load_error(file, k), "build the cache again on this machine"));
  EXPECT_TRUE(contains(load_error(teacher_path_, good), "not a teacher cache")) << load_error(teacher_path_, good);
  // up_to_date: the same comparison, from the header alone, without throwing.
  EXPECT_TRUE(TeacherCache::up_to_date(file, good));
  EXPECT_FALSE(TeacherCache::up_to_date(file, k));  // other kernels
  EXPECT_FALSE(TeacherCache::up_to_date(teacher_path_, good));
  EXPECT_FALSE(TeacherCache::up_to_date(path("none.h5"), good));
  EXPECT_TRUE(contains(load_error(path("none.h5"), good), "none.h5"));
  {  // logits of the wrong shape under a good header
    H5File f = H5File::create(path("short.h5"));
    const H5File g = H5File::open_read(file);
    for (const char* a : {"format", "dataset", "kernels"}) f.set_attr("/", a, g.get_attr_string("/", a));
    for (const char* a : {"format_version", "teachers_count", "samples", "classes", "crop_pad", "hflip"})
      f.set_attr("/", a, g.get_attr_int("/", a));
    f.set_attr("/", "teacher_0", g.get_attr_string("/", "teacher_0"));
    f.set_attr_floats("/", "mean", {1}, g.get_attr_floats("/", "mean"));
    f.set_attr_floats("/", "std", {1}, g.get_attr_floats("/", "std"));
    f.write_floats("logits", {512, 17, 4}, std::vector<float>(512 * 17 * 4));
    f.close();
  }
  const std::string e = load_error(path("short.h5"), good);
  EXPECT_TRUE(contains(e, "short.h5: logits (512, 17, 4), expected (512, 18, 4)")) << e;
  EXPECT_FALSE(TeacherCache::up_to_date(path("short.h5"), good));
  // Cutout cannot be cached.
  const ModulePtr teacher = load_teachers({teacher_path_}, data_);
  LoaderOptions lo = loader_options(data_, 32, 0, true);
  lo.cutout = 2;
  const DataLoader loader(data_.train, lo);
  EXPECT_THROW(TeacherCache::build(*teacher, loader, good, path("cut.h5"), 32, nullptr), std::invalid_argument);
  EXPECT_FALSE(fs::exists(path("cut.h5")));
}

}  // namespace
}  // namespace qatlab
