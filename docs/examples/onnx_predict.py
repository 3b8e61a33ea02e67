"""Classify one clip with a file from `speechcls export`, with onnxruntime alone (no torch, no speechcls).

python onnx_predict.py runs/kws12/best.onnx clip.wav
"""

import json
import sys

import numpy as np
import onnxruntime as ort
import soundfile as sf

model, wav = sys.argv[1], sys.argv[2]
session = ort.InferenceSession(model)
classes = json.loads(session.get_modelmeta().custom_metadata_map["classes"])
audio, rate = sf.read(wav, dtype="float32")  # 16 kHz mono
wave = np.zeros((1, 16000), dtype=np.float32)
wave[0, : min(len(audio), 16000)] = audio[:16000]  # zero-padded / truncated to one second
probs = session.run(None, {"waveform": wave})[0][0]
print(classes[int(probs.argmax())], float(probs.max()))
