// nn_placeholder.cpp: keeps the library non-empty until its first source lands.
