// image_folder.h: an image classification dataset as a folder of PNG and JPEG files, one sub-folder
// per class.
//
// Shape letters: N images, C channels, H height, W width.
//
// Layout:
//   DIR/train/<class>/<image>.png|.jpg|.jpeg     the training split
//   DIR/test/<class>/<image>.png|.jpg|.jpeg      the test split
// The classes are the sub-folders of DIR/train, sorted by name (byte order); their names are the class
// names. DIR/test may lack a class but not have one DIR/train lacks. Within a class the images are
// taken in file-name order. Every image of a split must have the size and channel count (1 gray,
// 3 RGB) of the split's first image: images are not resized or converted, and one that differs is
// refused with its path. Refused as well, each naming the path: an empty class folder, a file of
// another kind (extension other than .png, .jpg, .jpeg, any case), a file directly in DIR/train or a
// folder inside a class folder, anything that is not a regular file, and what image_codec.h refuses.
#pragma once

#include <string>
#include <vector>

#include "data/dataset.h"

namespace qatlab {

// Loads one split; `name` goes into the result. Throws std::runtime_error naming the file or folder.
ImageDataset load_image_folder(const std::string& dir, Split split, const std::string& name);

// The class names of the folder dataset at `dir`: the sorted sub-folders of dir/train. Throws when
// dir/train is missing or has no sub-folder.
std::vector<std::string> image_folder_classes(const std::string& dir);

// True when `dir` has a train/ sub-folder that holds at least one folder (the layout above).
bool looks_like_image_folder(const std::string& dir);

}  // namespace qatlab
