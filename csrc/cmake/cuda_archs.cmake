# The default CUDA architectures for an nvcc version: every GPU that toolkit can build for, from Turing on
# (and Xavier, sm_72, where the toolkit still has it), as real code, plus PTX for the newest so that later
# GPUs still run. Never "native": the build machine's GPU (often none) says nothing about the box.
#
#   nvcc 13       drops sm_72: 75 80 86 87 89 90(PTX)           Orin is 87
#   nvcc 11.8-12  72 75 80 86 87 89 90(PTX)                      Xavier (JetPack 5 has 11.4) is 72
#   nvcc 11.4-11.7 72 75 80 86 87(PTX)                           no 89/90 before 11.8
#   older          72 75 80 86(PTX)                              sm_87 arrived in 11.4
function(vad_edge_default_cuda_archs version out)
  if(version VERSION_GREATER_EQUAL 13)
    set(archs "75-real;80-real;86-real;87-real;89-real;90")
  elseif(version VERSION_GREATER_EQUAL 11.8)
    set(archs "72-real;75-real;80-real;86-real;87-real;89-real;90")
  elseif(version VERSION_GREATER_EQUAL 11.4)
    set(archs "72-real;75-real;80-real;86-real;87")
  else()
    set(archs "72-real;75-real;80-real;86")
  endif()
  set(${out} "${archs}" PARENT_SCOPE)
endfunction()
