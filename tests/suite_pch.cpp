// suite_pch.cpp: the source of qatlab_test_pch, the target that builds the precompiled header every test
// suite reuses (tests/CMakeLists.txt). It defines nothing.
