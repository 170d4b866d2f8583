"""Training data: jsonl manifests, corpus preparers (:mod:`audiocodec.data.prepare`), crop datasets and
loaders, and a synthetic offline corpus (:mod:`audiocodec.data.synth`)."""
from .dataset import (AudioCropDataset, AudioLoader, CollateAudio, EpochSampler, collate_audio, format_skipped,
                      gather_skipped, make_dataloader)
from .manifest import (ManifestError, filter_by_duration, manifest_stats, read_manifest, split_records,
                       validate_record, validate_records, write_manifest, write_splits)

__all__ = ["AudioCropDataset", "AudioLoader", "CollateAudio", "EpochSampler", "collate_audio", "format_skipped",
           "gather_skipped", "make_dataloader", "ManifestError", "filter_by_duration", "manifest_stats",
           "read_manifest", "split_records", "validate_record", "validate_records", "write_manifest",
           "write_splits"]
