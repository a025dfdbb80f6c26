"""LFADS data: the HDF5 file format (hdf5), loading into tensors (dataset), preparing data from NWB, NLB and
spike times, and synthetic data sets with ground truth. Import from the submodule a name lives in; this
package imports nothing, so the light writers do not pull in torch."""
