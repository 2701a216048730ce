from celery import shared_task


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=540, time_limit=600)
def image_analyse(image_id: int) -> None:
    from workers.services.imaging import image_analyse as analyse

    analyse(image_id=image_id)
