"""A minimal MLServer runtime serving the same ONNX file with ONNX Runtime (MLServer has no ONNX runtime of its own)."""

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxDigits(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.settings.parameters.uri, options, providers=["CPUExecutionProvider"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        images = NumpyCodec.decode_input(payload.inputs[0])
        probabilities = self.session.run(["probabilities"], {"image": images})[0]
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output("probabilities", probabilities)]
        )
