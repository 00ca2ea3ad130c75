"""The script the SAM template deploys (replace it with yours; keep the last line).

    curl -X POST "$URL" -H 'content-type: application/json' \
         -d '{"trigger": "remind", "args": {"text": "water the plants"}}'
"""

import asyncflow
import asyncflow.aws_lambda
from asyncflow import Context

flow = asyncflow.setup()  # ASYNCFLOW_BACKEND=s3://<bucket>/asyncflow?packs=256 (the template)


@flow.workflow()
async def remind(c: Context, args: dict) -> str:
    # Pauses once: the schedule resumes it within ResumeEveryMinutes.
    await c.log(f"noted: {args['text']}")
    await c.pause_once()
    await c.log(f"reminder: {args['text']}")
    return args["text"]


handler = asyncflow.aws_lambda.handler(flow)
