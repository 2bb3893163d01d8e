// commands.h: the subcommands of `qatlab`, one function each (argv[0] is the subcommand's name).
#pragma once

namespace qatlab {

int cmd_train(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_qat(int argc, char** argv);
int cmd_ptq(int argc, char** argv);
int cmd_convert(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_sweep(int argc, char** argv);
int cmd_inspect(int argc, char** argv);
int cmd_export(int argc, char** argv);
int cmd_import(int argc, char** argv);
int cmd_compare(int argc, char** argv);
int cmd_teacher_cache(int argc, char** argv);

}  // namespace qatlab
