// test_teacher.cpp: distillation teachers (nn/train/teacher.h): an ensemble's output is the mean of its
// members' logits, computed as written; load_teachers gives one checkpoint's network as it is and several
// as their ensemble, and refuses an empty list, a file named twice, a model that is not float and one
// built for other images, classes or normalisation; a run distilled from an ensemble learns, leaves its
// teachers unchanged and reports their accuracy. The task: quadrant_data.h.
#include "nn/train/teacher.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/rng.h"
#include "nn/checkpoint.h"
#include "nn/train/evaluate.h"
#include "nn/train/quadrant_data.h"
#include "nn/train/quadrant_run.h"
#include "nn/train/train_run.h"

namespace qatlab {
namespace {

namespace fs = std::filesystem;

class TeacherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("qatlab_test_teacher_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // A quadrant network of its own initialisation, trained `epochs` epochs; its checkpoint in dir/<name>.
  std::string trained(const std::string& name, uint64_t seed, int64_t epochs) {
    TrainRun run = test::quadrant_run(data_, seed, epochs, path(name));
    train_model(run);
    return path(name) + "/checkpoint.h5";
  }

  const DataBundle data_ = test::quadrant_data();
  fs::path dir_;
};

// What load_teachers threw, or "" when it returned.
std::string load_error(const std::vector<std::string>& paths, const DataBundle& data) {
  try {
    load_teachers(paths, data);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// (n, 1, side, side) images of uniform values in [-1, 1).
Tensor random_images(int64_t n, Rng& rng) {
  std::vector<float> v(static_cast<size_t>(n * test::kQuadrantSide * test::kQuadrantSide));
  for (float& e : v) e = rng.uniform(-1.0f, 1.0f);
  return Tensor::from_vector({n, 1, test::kQuadrantSide, test::kQuadrantSide}, v);
}

// A module that returns a constant (N, cols) whatever its input's rows.
class Constant : public Module {
 public:
  Constant(int64_t cols, float value) : Module("Constant"), cols_(cols), value_(value) {}
  Tensor forward(const Tensor& x) override { return Tensor::full({x.size(0), cols_}, value_); }

 private:
  int64_t cols_;
  float value_;
};

TEST_F(TeacherTest, AnEnsembleAveragesItsMembersLogitsInOrder) {
  const ModulePtr a = model_from_checkpoint(load_checkpoint(trained("a", 1, 1)));
  const ModulePtr b = model_from_checkpoint(load_checkpoint(trained("b", 2, 1)));
  const ModulePtr c = model_from_checkpoint(load_checkpoint(trained("c", 3, 1)));
  for (const ModulePtr& m : {a, b, c}) m->eval();
  TeacherEnsemble ensemble({a, b, c});
  ensemble.eval();
  EXPECT_EQ(ensemble.members(), 3);
  EXPECT_EQ(ensemble.children().size(), 3u);
  EXPECT_EQ(ensemble.children()[1].first, "1");
  EXPECT_EQ(ensemble.named_parameters().size(), 3 * a->named_parameters().size());

  Rng rng(5);
  const Tensor x = random_images(6, rng);
  const Tensor got = ensemble.forward(x);
  const Tensor want = scale(add(add(a->forward(x), b->forward(x)), c->forward(x)), 1.0f / 3.0f);
  ASSERT_EQ(got.shape(), want.shape());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.numel() * sizeof(float)), 0);
  // It differs from each member (they were initialised apart).
  EXPECT_NE(got.to_vector(), a->forward(x).to_vector());

  // Too few members, a missing one, members that disagree on the output's shape.
  EXPECT_THROW(TeacherEnsemble({a}), std::invalid_argument);
  EXPECT_THROW(TeacherEnsemble({a, nullptr}), std::invalid_argument);
  TeacherEnsemble mismatched({std::make_shared<Constant>(4, 1.0f), std::make_shared<Constant>(5, 1.0f)});
  try {
    mismatched.forward(x);
    ADD_FAILURE() << "members of different shapes were averaged";
  } catch (const std::invalid_argument& e) {
    EXPECT_TRUE(contains(e.what(), "member 1 gives (6, 5), member 0 (6, 4)")) << e.what();
  }
}

TEST_F(TeacherTest, LoadTeachersGivesOneNetworkOrTheirEnsembleAndRefusesMisfits) {
  const std::string a = trained("a", 1, 1), b = trained("b", 2, 1);
  Rng rng(7);
  const Tensor x = random_images(4, rng);

  const ModulePtr one = load_teachers({a}, data_);
  EXPECT_FALSE(one->is<TeacherEnsemble>());
  const ModulePtr plain = model_from_checkpoint(load_checkpoint(a));
  one->eval();
  plain->eval();
  EXPECT_EQ(one->forward(x).to_vector(), plain->forward(x).to_vector());

  const ModulePtr two = load_teachers({a, b}, data_);
  ASSERT_TRUE(two->is<TeacherEnsemble>());
  EXPECT_EQ(two->as<TeacherEnsemble>()->members(), 2);

  EXPECT_TRUE(contains(load_error({}, data_), "no teacher"));
  EXPECT_TRUE(contains(load_error({a, b, a}, data_), "named twice"));
  EXPECT_TRUE(contains(load_error({a, path("a") + "/./checkpoint.h5"}, data_), "named twice"));
  EXPECT_TRUE(contains(load_error({a, path("missing.h5")}, data_), "missing.h5"));

  Checkpoint qat = load_checkpoint(b);
  qat.model_kind = "qat";
  save_checkpoint(path("qat.h5"), qat);
  EXPECT_TRUE(contains(load_error({a, path("qat.h5")}, data_), "is a 'qat' checkpoint; the teacher is a float one"));

  DataBundle other_classes = data_;
  other_classes.spec.num_classes = 3;
  EXPECT_TRUE(contains(load_error({a}, other_classes), "was built for 1x8x8 images and 4 classes; this run's data has 1x8x8 and 3"));
  DataBundle other_norm = data_;
  other_norm.mean = {0.5f};
  EXPECT_TRUE(contains(load_error({a}, other_norm), "normalises its inputs with mean 0.3"));
}

TEST_F(TeacherTest, ARunDistilledFromAnEnsembleLearnsAndReportsItsTeacher) {
  const std::string a = trained("a", 1, 3), b = trained("b", 2, 3);
  const ModulePtr teacher = load_teachers({a, b}, data_);
  std::vector<std::vector<float>> before;
  for (const auto& [name, t] : teacher->named_parameters()) before.push_back(t.to_vector());

  TrainRun student;
  student.description = parse_model_description(test::kQuadrantNetwork, "the test's network");
  Rng rng(3);
  student.model = build_model(student.description, data_.spec, rng);
  student.settings.epochs = 2;
  student.settings.batch_size = 32;
  student.settings.lr = 0.05f;
  student.settings.distill_weight = 0.5f;
  student.settings.distill_temperature = 2.0f;
  student.data = &data_;
  student.teacher = teacher;
  const std::string log_path = path("log.txt");
  std::FILE* log = std::fopen(log_path.c_str(), "w");
  ASSERT_NE(log, nullptr);
  student.log = log;
  const TrainOutcome outcome = train_model(student);
  std::fclose(log);
  EXPECT_GT(outcome.history.back().at("test_acc"), 0.9);

  std::vector<std::vector<float>> after;
  for (const auto& [name, t] : teacher->named_parameters()) after.push_back(t.to_vector());
  EXPECT_EQ(before, after);
  // The report names the teacher and its accuracy, which is the ensemble's own.
  std::ifstream in(log_path);
  std::stringstream text;
  text << in.rdbuf();
  DataLoader test(data_.test, loader_options(data_, 256, 0, false));
  char expected[128];
  std::snprintf(expected, sizeof expected, "teacher (2 networks, logits averaged): test accuracy %.2f %%",
                100.0 * evaluate(*teacher, test).accuracy);
  EXPECT_TRUE(contains(text.str(), expected)) << text.str();
}

}  // namespace
}  // namespace qatlab
